"""The project's shared names: roles, span kinds, the ignore label and dtype names."""
from __future__ import annotations

import torch

# Roles a stage can train; `multitask` trains planner, caller and summarizer targets in one model.
TRAINED_ROLES = ("backbone", "planner", "caller", "summarizer")
MULTITASK = "multitask"
# GenTool roles: rank the offered tools, choose one and write its call, or both in one target.
GENTOOL_ROLES = ("ranking", "selection", "ranking_selection")
# The team: the roles that write an agent's three generated turns, in the order they act.
TEAM_ROLES = ("planner", "caller", "summarizer")
# Turn kinds of a canonical trajectory (who wrote a turn: the user, a team role, the tool).
TURN_KINDS = ("user", "planner", "caller", "observation", "summarizer")
# Decisions a planner turn ends with. An agent step's plan is its decision: call (the caller
# writes a tool call), conclusion (the summarizer writes the answer) or give_up.
DECISIONS = ("call", "conclusion", "give_up")
# Other spellings of a decision in test sets and predictions ("finish": the α-UMi release's plan label).
DECISION_ALIASES = {"finish": "conclusion", "give up": "give_up", "caller": "call"}
# Span kinds of supervised tokens; index 0 is unsupervised context.
SPAN_KINDS = ("none", "thought", "action", "answer", "ranking")
# The span kind each turn role's target belongs to.
KIND_OF_ROLE = {"planner": "thought", "caller": "action", "summarizer": "answer"}
# A test set (evaluate.test_sets) that is the training data's validation split: the held-in dialogs.
VAL_SPLIT = "val_split"
# The label of a token the loss ignores (PyTorch's cross-entropy default).
IGNORE_INDEX = -100

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
