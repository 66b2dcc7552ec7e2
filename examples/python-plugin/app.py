"""`summarize`: a wasmhive task handler written in Python.

Payload {"text": "...", "sentences": 2} -> {"summary": [...], "sentences": n, "words": n}:
the first sentences of the text (at most the manifest's `max_sentences`),
with counts. Built into a WebAssembly component by componentize-py; runs in
the daemon's sandbox like any other plugin.
"""

import json
import re

import wit_world
from componentize_py_types import Err
from wit_world.imports import host
from wit_world.imports.wasmhive_plugin_types import (
    LogLevel,
    PluginInfo,
    Task,
    TaskError_Fatal,
)

SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


class WitWorld(wit_world.WitWorld):
    def describe(self) -> PluginInfo:
        return PluginInfo(
            name="summarize",
            version="1.0.0",
            kinds=["summarize"],
            category="batch",
            description="the first sentences of a text, with counts (Python)",
        )

    def handle(self, task: Task) -> str:
        try:
            payload = json.loads(task.payload)
        except ValueError as e:
            raise Err(TaskError_Fatal(f"invalid payload: {e}"))
        if not isinstance(payload, dict) or not isinstance(payload.get("text"), str):
            raise Err(TaskError_Fatal("payload must be an object with a `text` string"))
        text = payload["text"].strip()
        if not text:
            raise Err(TaskError_Fatal("`text` is empty"))
        limit = int(host.config_get("max_sentences") or "5")
        wanted = min(int(payload.get("sentences", 2)), limit)
        sentences = [s for s in SENTENCE_END.split(text) if s]
        host.log(LogLevel.INFO, f"{len(sentences)} sentences, keeping {wanted}")
        host.progress(100, "summarized")
        return json.dumps(
            {
                "summary": sentences[:wanted],
                "sentences": len(sentences),
                "words": len(re.findall(r"\w+", text)),
            }
        )
