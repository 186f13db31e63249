"""`release_smoke_test_job`: an op-based job, on a schedule, that loads the latest good release and generates."""

import dagster as dg

from deploy_code_location.release_checks import SMOKE_PROMPT
from shared_code_location.contract.resources import OutputFolderResource

SMOKE_TOKENS = 100


@dg.op(description="Find the latest good release (latest.json) and load it in ONNX Runtime.")
def load_latest_release(context: dg.OpExecutionContext, output_folder: OutputFolderResource) -> str:
    """The release's version; fails loudly when there is none or it does not load."""
    from deploy_code_location.onnx_generator import OnnxGenerator
    from deploy_code_location.release_store import resolve_release

    folder = resolve_release(output_folder.path)
    generator = OnnxGenerator(folder)
    context.log.info(f"loaded release {generator.version} from {folder}")
    return generator.version


@dg.op(description="Generate from a fixed prompt and check the output is real text from the vocabulary.")
def generate_and_check(context: dg.OpExecutionContext, output_folder: OutputFolderResource, version: str) -> dict:
    """Raises `dg.Failure` unless the release generates the requested number of known characters."""
    from deploy_code_location.onnx_generator import OnnxGenerator
    from deploy_code_location.release_store import resolve_release

    generator = OnnxGenerator(resolve_release(output_folder.path, version))
    result = generator.generate(SMOKE_PROMPT, SMOKE_TOKENS, temperature=0.8, seed=0)
    known = set(generator.tokenizer.symbols[1:])
    problems = []
    if len(result.text) != SMOKE_TOKENS:
        problems.append(f"generated {len(result.text)} characters, expected {SMOKE_TOKENS}")
    if any(ch not in known for ch in result.text):
        problems.append("generated the unknown symbol")
    if not result.text.strip():
        problems.append("generated only whitespace")
    ms_per_token = 1000 * result.seconds / SMOKE_TOKENS
    if problems:
        raise dg.Failure(
            f"release {generator.version} failed its smoke test: {'; '.join(problems)}",
            metadata={"sample": result.text},
        )
    context.log.info(f"release {generator.version}: {ms_per_token:.3f} ms/token: {result.text!r}")
    return {"release": generator.version, "ms_per_token": ms_per_token, "sample": result.text}


@dg.job(description="Smoke test of the latest good release: load, generate, check.", tags={"kind": "smoke-test"})
def release_smoke_test_job():
    generate_and_check(load_latest_release())


#: Hourly; stopped by default (a fresh instance has no release yet). Turn it on in the UI under Automation.
release_smoke_test_schedule = dg.ScheduleDefinition(
    name="release_smoke_test_schedule",
    job=release_smoke_test_job,
    cron_schedule="0 * * * *",
    default_status=dg.DefaultScheduleStatus.STOPPED,
)
