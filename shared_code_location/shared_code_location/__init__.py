"""The shared package every code location imports; it imports none of them. Three parts, and two modules:

- `contract/`: what the locations agree on — asset keys and storage formats, object storage, the IO manager, the
  resources, the experiment partitions, data versions. Importing it never imports torch.
- `model/`: the model code, the transformer (PyTorch, imported only by the modules that need it) and the tokenizer.
- `runtime/`: how a location is loaded and driven — the loader, automation, staleness, the runs `cli.py run`
  starts, the run launcher of `up`, loopback helpers.
- `settings.py`: every `ML_PIPELINE_*` setting, once; `private_dagster.py`: the only Dagster internals used, each
  with why.
"""
