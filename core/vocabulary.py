"""The project's shared names: roles, span kinds, the ignore label and dtype names."""
from __future__ import annotations

import torch

# Roles a stage can train; `multitask` trains planner, caller and summarizer targets in one model.
TRAINED_ROLES = ("backbone", "planner", "caller", "summarizer")
MULTITASK = "multitask"
# GenTool roles: rank the offered tools, choose one and write its call, or both in one target.
GENTOOL_ROLES = ("ranking", "selection", "ranking_selection")
# The three generated turns of an agent, in the order they act.
TURN_ROLES = ("planner", "caller", "summarizer")
# Turn roles of a canonical trajectory.
TRAJECTORY_TURNS = ("user", "planner", "caller", "observation", "summarizer")
# Decisions a planner turn ends with.
DECISIONS = ("call", "conclusion", "give_up")
# Span kinds of supervised tokens; index 0 is unsupervised context.
SPAN_KINDS = ("none", "thought", "action", "answer", "ranking")
# The span kind each turn role's target belongs to.
KIND_OF_ROLE = {"planner": "thought", "caller": "action", "summarizer": "answer"}
# The label of a token the loss ignores (PyTorch's cross-entropy default).
IGNORE_INDEX = -100

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
