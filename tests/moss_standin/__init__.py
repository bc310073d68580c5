"""Build a MOSS-Audio-Tokenizer stand-in model directory (remote code + weights + auto_map)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).parent
FILES = ("configuration_moss_standin.py", "modeling_moss_standin.py")


def make_standin_dir(target: Path, num_quantizers: int = 4, codebook_size: int = 32, seed: int = 0) -> Path:
    """Write a model directory that `AutoModel.from_pretrained(target, trust_remote_code=True)` loads,
    exactly as it loads a downloaded MOSS-Audio-Tokenizer directory."""
    import torch

    target.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        shutil.copy(HERE / name, target / name)
    # import the two modules as a package, as transformers' dynamic loader will
    pkg = f"_moss_standin_build_{abs(hash(str(target)))}"
    spec = importlib.util.spec_from_file_location(pkg, target / "__init__.py", submodule_search_locations=[str(target)])
    (target / "__init__.py").write_text("")
    module = importlib.util.module_from_spec(spec)
    sys.modules[pkg] = module
    cfg_mod = importlib.import_module(f"{pkg}.configuration_moss_standin")
    model_mod = importlib.import_module(f"{pkg}.modeling_moss_standin")
    torch.manual_seed(seed)
    config = cfg_mod.MossStandinConfig(quantizer_kwargs={"quantizer_type": "rvq", "num_quantizers": num_quantizers, "codebook_size": codebook_size})
    model = model_mod.MossStandinModel(config)
    model.save_pretrained(target)
    (target / "__init__.py").unlink()
    cfg_path = target / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["auto_map"] = {"AutoConfig": "configuration_moss_standin.MossStandinConfig", "AutoModel": "modeling_moss_standin.MossStandinModel"}
    cfg_path.write_text(json.dumps(cfg, indent=2))
    return target
