"""Distractor tools by similarity: BM25 over tool names and descriptions (no dependencies), or a
sentence-embedding model when the recipe names one (sentence-transformers, imported only then)."""
from __future__ import annotations

import math
import re
from collections import Counter


def tool_text(tool: dict) -> str:
    name = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|[_\-.]+", " ", tool["name"])
    return f"{name} {tool['description']}"


def tokens(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


class BM25:
    def __init__(self, docs: list[str], k1: float = 1.5, b: float = 0.75):
        self.docs = [Counter(tokens(d)) for d in docs]
        self.lens = [sum(d.values()) for d in self.docs]
        self.avg = sum(self.lens) / max(1, len(self.lens))
        df = Counter(t for d in self.docs for t in d)
        n = len(self.docs)
        self.idf = {t: math.log(1 + (n - f + 0.5) / (f + 0.5)) for t, f in df.items()}
        self.k1, self.b = k1, b

    def scores(self, query: str) -> list[float]:
        q = tokens(query)
        out = []
        for d, length in zip(self.docs, self.lens):
            s = 0.0
            for t in q:
                f = d.get(t, 0)
                if f:
                    s += self.idf[t] * f * (self.k1 + 1) / (f + self.k1 * (1 - self.b + self.b * length / self.avg))
            out.append(s)
        return out


class Similarity:
    """similarity(target tool) -> the pool's tool names, most similar first (ties by name)."""

    def __init__(self, pool: list[dict], cfg: dict):
        self.pool = pool
        self.kind = cfg.get("similarity", "bm25")
        texts = [tool_text(t) for t in pool]
        if self.kind == "bm25":
            bm = cfg.get("bm25") or {}
            self.index = BM25(texts, float(bm.get("k1", 1.5)), float(bm.get("b", 0.75)))
        elif self.kind == "embedding":
            if not cfg.get("embedding_model"):
                raise ValueError("toolset.similarity: embedding needs toolset.embedding_model "
                                 "(a sentence-transformers model name or path)")
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError:
                raise ValueError("toolset.similarity: embedding needs the sentence-transformers "
                                 "package (pip install sentence-transformers), or use bm25") from None
            self.model = SentenceTransformer(cfg["embedding_model"])
            self.vectors = self.model.encode(texts, normalize_embeddings=True)
        else:
            raise ValueError(f"toolset.similarity: {self.kind!r} is not bm25 or embedding")

    def ranked(self, tool: dict) -> list[str]:
        if self.kind == "bm25":
            scores = self.index.scores(tool_text(tool))
        else:
            vec = self.model.encode([tool_text(tool)], normalize_embeddings=True)[0]
            scores = [float(v @ vec) for v in self.vectors]
        order = sorted(range(len(self.pool)), key=lambda i: (-scores[i], self.pool[i]["name"]))
        return [self.pool[i]["name"] for i in order]
