"""GenTool evaluation: tool selection, ranking, arguments, zero-to-one and weak-to-strong accuracy
over the four generalization scenarios (seen / unseen queries x seen / unseen tools)."""
