"""Reference embeddings for the encoder's test, computed independently of it:
Hugging Face's `tokenizers` for the ids and a NumPy forward pass of the same
weights (no padding, mean pooling, unit length).

    pip install tokenizers numpy
    python3 host/models/tests/reference.py target/models/all-minilm-l6-v2 host/models/tests/minilm-reference.json
"""
import json, struct, sys, numpy as np
from tokenizers import Tokenizer
d = sys.argv[1]
tok = Tokenizer.from_file(d + "/tokenizer.json")
tok.no_padding()
tok.no_truncation()
f = open(d + "/model.safetensors", "rb"); n = struct.unpack("<Q", f.read(8))[0]; h = json.loads(f.read(n)); data = f.read()
W = {}
for k, v in h.items():
    if k == "__metadata__" or v["dtype"] != "F32": continue
    a, b = v["data_offsets"]; W[k] = np.frombuffer(data[a:b], dtype=np.float32).reshape(v["shape"])
from math import erf
verf = np.vectorize(erf)
def ln(x, p): m = x.mean(-1, keepdims=True); v = ((x - m) ** 2).mean(-1, keepdims=True); return (x - m) / np.sqrt(v + 1e-12) * W[p + ".weight"] + W[p + ".bias"]
def lin(x, p): return x @ W[p + ".weight"].T + W[p + ".bias"]
def embed(ids):
    x = W["embeddings.word_embeddings.weight"][ids] + W["embeddings.position_embeddings.weight"][: len(ids)] + W["embeddings.token_type_embeddings.weight"][0]
    x = ln(x, "embeddings.LayerNorm")
    for l in range(6):
        p = f"encoder.layer.{l}."
        q, k, v = (lin(x, p + "attention.self." + n) for n in ("query", "key", "value"))
        ctx = np.zeros_like(x)
        for hd in range(12):
            s = slice(hd * 32, hd * 32 + 32)
            sc = q[:, s] @ k[:, s].T / np.sqrt(32); sc = np.exp(sc - sc.max(-1, keepdims=True)); sc /= sc.sum(-1, keepdims=True)
            ctx[:, s] = sc @ v[:, s]
        x = ln(x + lin(ctx, p + "attention.output.dense"), p + "attention.output.LayerNorm")
        i = lin(x, p + "intermediate.dense"); i = 0.5 * i * (1 + verf(i / np.sqrt(2)))
        x = ln(x + lin(i, p + "output.dense"), p + "output.LayerNorm")
    m = x.mean(0); return (m / np.linalg.norm(m)).tolist()
texts = ["How do I read a file line by line?", "The Café, naïve résumé — 3.14!", "Returns are accepted within thirty days."]
out = []
for t in texts:
    e = tok.encode(t)
    out.append({"text": t, "ids": e.ids, "embedding": embed(e.ids)})
for o in out: o["embedding"] = [round(x, 6) for x in o["embedding"]]
json.dump(out, open(sys.argv[2], "w"))
