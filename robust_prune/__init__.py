__version__ = "0.1.0"

# The main API at the top level: `from robust_prune import compute_mrs, allocate, prune, finetune, evaluate, mrpf`.
# Each name is imported on first use, so `import robust_prune` (and the command line's --help) stays fast.
_API = {
    "AttackSpec": "attacks", "adversarial_batch": "attacks", "create_model": "models", "load_checkpoint": "models",
    "save_checkpoint": "models", "get_loaders": "data", "prunable_groups": "groups", "compute_mrs": "mrs",
    "MRSReport": "mrs", "Criticality": "mrs", "Rewind": "mrs", "Noise": "mrs", "Worst": "mrs", "Taylor": "mrs",
    "allocate": "allocation", "Allocation": "allocation", "CostModel": "allocation", "Rule": "allocation",
    "Uniform": "allocation", "Param": "allocation", "Inverse": "allocation", "PerParam": "allocation", "Rank": "allocation",
    "Softmax": "allocation", "prune": "pruning", "finetune": "finetune", "robust_digits_model": "finetune",
    "TrainingLoss": "finetune", "TRADES": "finetune", "PGDAT": "finetune", "MART": "finetune", "evaluate": "evaluation",
    "MRPFConfig": "config",
    "mrpf": "pipeline", "compare": "pipeline",
}
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        import importlib
        value = getattr(importlib.import_module(f"robust_prune.{_API[name]}"), name)
        if name != _API[name]: globals()[name] = value  # `finetune` is also a submodule: that module is callable as the function
        return value
    raise AttributeError(f"module 'robust_prune' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_API))
