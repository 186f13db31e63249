"""Run lm-evaluation-harness against the server on the two tasks of `tasks.py`, in one process: what
`tests/test_serving.py` does, in the harness's environment.

`python run.py TEST_IDS.npy VOCABULARY.json FOLDER MODEL_ARGS RESULTS.json` writes the tasks into FOLDER, evaluates
them with `local-completions` (`MODEL_ARGS` as `lm_eval --model_args` takes them, batches of 16 prompts, the
server's limit) and writes the results and every sample to RESULTS.json. It is `lm_eval --model local-completions
--tasks heldout_rolling,heldout_choice --include_path FOLDER ...` through the harness's own `simple_evaluate`, less
the CLI's index of its thousands of built-in tasks (13 s on two cores), which these two do not need.
"""

import json
import sys
from pathlib import Path

from tasks import load_tokens, write_tasks


def main() -> None:
    tokens, vocabulary, folder, model_args, output = sys.argv[1:6]
    symbols = json.loads(Path(vocabulary).read_text(encoding="utf-8"))["symbols"]
    tasks = write_tasks(Path(folder), "".join(symbols[int(i)] for i in load_tokens(Path(tokens))))

    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager
    from lm_eval.utils import handle_non_serializable

    evaluated = simple_evaluate(
        model="local-completions",
        model_args=model_args,
        tasks=list(tasks),
        batch_size=16,
        log_samples=True,
        task_manager=TaskManager(include_path=folder, include_defaults=False),
    )
    answer = {"results": evaluated["results"], "samples": evaluated["samples"]}
    Path(output).write_text(json.dumps(answer, default=handle_non_serializable), encoding="utf-8")


if __name__ == "__main__":
    main()
