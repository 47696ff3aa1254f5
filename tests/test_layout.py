"""The package layout (docs/layout.md): imports point down the layers, recipes never import
recipes, and no module is over 800 lines. Function-level imports count."""

import ast
from pathlib import Path

PKG = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file()) / "t5electra"

# Layer of each top-level module / package of t5electra: a module may import its own layer's
# modules and lower layers, never a higher one.
LAYERS = {
    "core": 0, "errors": 0, "config": 0, "machine": 0,
    "nn": 1, "checkpoint": 1, "modeling": 1, "tokenizer_base": 1, "tokenizer_files": 1, "tokenizers": 1, "wordpiece": 1, "metrics": 1,
    "generation": 2, "inference": 2,
    "models": 3, "lora": 3,
    "pipelines": 4, "data": 4, "eval": 4, "train": 4, "plot": 4,
    "recipes": 5, "serve": 5, "experiments": 5,
    "commands": 6, "cli": 6, "__main__": 6, "__init__": 6, "generate": 6, "fill_mask": 6,  # the last two: old import paths
}
# The known exception: the RTD pretrainer masks its own batches with data/masking.py (pure tensor
# functions that import nothing of the package but errors).
ALLOWED = {("t5electra.models.electra_rtd", "t5electra.data.masking")}
BUDGET = 800


def _modules():
    for f in sorted(PKG.rglob("*.py")):
        parts = list(f.relative_to(PKG.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        yield f, ".".join(parts[:-1] if is_pkg else parts), is_pkg


def _imports(f: Path, mod: str, is_pkg: bool):
    for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = mod.split(".") if is_pkg else mod.split(".")[:-1]
                parts = parts[:len(parts) - (node.level - 1)]
                base = ".".join(parts + ([node.module] if node.module else []))
            yield from ([base] if base != "t5electra" else [f"t5electra.{a.name}" for a in node.names])
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names)


def _layer(mod: str) -> str:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_top_level_module_has_a_layer():
    names = {p.stem if p.is_file() else p.name for p in PKG.iterdir()
             if (p.suffix == ".py") or (p.is_dir() and (p / "__init__.py").is_file())}
    assert names - set(LAYERS) == set(), "add the new module to LAYERS (and to docs/layout.md)"


def test_imports_point_down_and_recipes_do_not_import_recipes():
    upward, recipe_to_recipe = [], []
    for f, mod, is_pkg in _modules():
        for target in _imports(f, mod, is_pkg):
            if not target.startswith("t5electra.") or _layer(target) not in LAYERS:
                continue
            a, b = _layer(mod), _layer(target)
            if a != b and LAYERS[b] > LAYERS[a] and (mod, target) not in ALLOWED:
                upward.append(f"{mod} -> {target}")
            if (a == b == "recipes" and not mod.endswith("quickstart") and not mod.endswith("quickstart_demos")
                    and target != "t5electra.recipes" and target != mod):
                recipe_to_recipe.append(f"{mod} -> {target}")
    assert upward == [], "imports that point up the layers (docs/layout.md)"
    assert recipe_to_recipe == [], "recipes import each other; move the shared piece to train/, eval/ or data/"


def test_no_module_over_the_line_budget():
    sizes = {str(f.relative_to(PKG.parent)): f.read_text(encoding="utf-8").count("\n") for f in PKG.rglob("*.py")}
    assert {f: n for f, n in sizes.items() if n > BUDGET} == {}, "split these along a seam (docs/layout.md)"


def test_old_import_paths_still_work():
    """Users' imports from before the reorganisation keep working (thin re-exports)."""
    import t5electra
    from t5electra import fill_mask, generate
    from t5electra.generation import fill_mask as new_fill_mask
    from t5electra.generation import seq2seq
    from t5electra.pipelines import ElectraPipeline

    assert generate.generate is seq2seq.generate and generate.GenerationSettings is seq2seq.GenerationSettings
    assert fill_mask.fill_mask_generate is new_fill_mask.fill_mask_generate
    assert fill_mask.ElectraPipeline is ElectraPipeline is t5electra.ElectraPipeline
    from t5electra.models.t5 import BaseModelOutput, T5DecoderCache, decode_linear  # noqa: F401
    from t5electra.modeling import ModelOutput  # noqa: F401
    from t5electra.tokenizers import BatchEncoding  # noqa: F401
