"""onnxruntime-genai: the ONNX GenAI directories slmkit's export writes (int4 / int8 / fp32 graphs).

Teacher-forced logits come from one ``append_tokens`` of the whole sequence: the prefill's
``logits`` output holds every position (``get_logits()`` would give only the last one).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from slmkit.runtimes.base import BatchDoesNotFit, Variant, eos_ids, trim_at_eos
from slmkit.runtimes.files import check_onnx_files


def genai_config(onnx_dir: Path) -> dict:
    return json.loads((Path(onnx_dir) / "genai_config.json").read_text())["model"]


def min_cache_length(config: dict) -> int:
    """The KV cache length the graph needs at least: its sliding window, where attention has one.

    onnxruntime-genai sizes the cache to ``max_length`` and refuses one shorter than the model's
    local window (Gemma 2 / 3, Mistral with a window), even for a sequence shorter than the window.
    """
    window = (config.get("decoder", {}).get("sliding_window") or {}).get("window_size") or 0
    return int(window)


class OgLM:
    """Quality through onnxruntime-genai, one sequence at a time."""

    backend = "onnxruntime_genai"
    hf_dir = None

    def __init__(self, onnx_dir: Path):
        import onnxruntime_genai as og

        check_onnx_files(onnx_dir)
        self.og = og
        self.model = og.Model(str(onnx_dir))
        cfg = genai_config(onnx_dir)
        self.eos = eos_ids(cfg.get("eos_token_id"))
        self.context_length = int(cfg.get("context_length") or 0) or None
        self.min_length = min_cache_length(cfg)

    def _generator(self, needed: int, min_length: int = 0):
        length = max(needed, self.min_length)
        if self.context_length:
            length = min(length, max(needed, self.context_length))
        params = self.og.GeneratorParams(self.model)
        params.set_search_options(max_length=length, min_length=min_length, batch_size=1, do_sample=False)
        return self.og.Generator(self.model, params)

    def logits(self, seqs: list[list[int]]):
        import numpy as np
        import torch

        out = []
        for s in seqs:
            g = self._generator(len(s) + 1)
            g.append_tokens(np.asarray([s], dtype=np.int32))
            out.append(torch.from_numpy(np.array(g.get_output("logits"))[0, : len(s)]).float())
        return out

    def generate(self, prompts: list[list[int]], max_new_tokens: int) -> list[list[int]]:
        import numpy as np

        out = []
        for p in prompts:
            g = self._generator(len(p) + max_new_tokens)
            g.append_tokens(np.asarray([p], dtype=np.int32))
            while not g.is_done() and len(g.get_sequence(0)) < len(p) + max_new_tokens:
                g.generate_next_token()
            out.append(trim_at_eos([int(t) for t in g.get_sequence(0)[len(p):]], self.eos))
        return out


def load_lm(variant: Variant, device: str = "cpu", threads: int | None = None) -> OgLM:
    return OgLM(variant.path)


class OgSession:
    """One Generator per request; min_length = max_length keeps EOS from ending a timed request."""

    def __init__(self, variant: Variant, new_tokens: int):
        import onnxruntime_genai as og

        self.og, self.new_tokens = og, new_tokens
        self.model = og.Model(str(variant.path))
        d = genai_config(variant.path)
        dec = d["decoder"]
        self.context_length = int(d.get("context_length", 0)) or None
        self.min_length = min_cache_length(d)
        self.dims = {
            "layers": dec["num_hidden_layers"], "heads": dec["num_attention_heads"],
            "kv_heads": dec.get("num_key_value_heads", dec["num_attention_heads"]), "head_dim": dec["head_size"],
            "hidden": dec["hidden_size"], "intermediate": 4 * dec["hidden_size"], "vocab": d["vocab_size"],
            "dtype_bytes": 4,
        }

    def sync(self) -> None:
        pass

    def start(self, batch) -> Any:
        import numpy as np

        b, t = len(batch), len(batch[0])
        total = t + self.new_tokens
        if self.context_length and total > self.context_length:
            raise BatchDoesNotFit(
                f"prompt + new tokens = {total} exceeds the graph's context_length {self.context_length}"
            )
        params = self.og.GeneratorParams(self.model)
        length = max(total, self.min_length)
        # min_length = the request's own end: EOS never stops it, and the cache may be longer
        params.set_search_options(max_length=length, min_length=total, batch_size=b, do_sample=False)
        g = self.og.Generator(self.model, params)
        g.append_tokens(np.asarray(batch, dtype=np.int32))
        g.generate_next_token()
        return g

    def step(self, state) -> None:
        state.generate_next_token()


def card_notes(onnx_rel: str) -> str:
    return (
        "### Run the ONNX directory with onnxruntime-genai\n\n"
        "```bash\npip install onnxruntime-genai\n```\n\n"
        "```python\n"
        "import onnxruntime_genai as og\n"
        f"model = og.Model(\"{onnx_rel}\")\n"
        "tokenizer = og.Tokenizer(model)\n"
        "prompt = tokenizer.apply_chat_template('[{\"role\": \"user\", \"content\": \"Hello!\"}]', "
        "add_generation_prompt=True)\n"
        "params = og.GeneratorParams(model)\n"
        "params.set_search_options(max_length=256)\n"
        "generator = og.Generator(model, params)\n"
        "generator.append_tokens(tokenizer.encode(prompt))\n"
        "while not generator.is_done():\n"
        "    generator.generate_next_token()\n"
        "print(tokenizer.decode(generator.get_sequence(0)))\n"
        "```"
    )
