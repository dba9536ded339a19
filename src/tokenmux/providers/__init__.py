"""One module per provider kind: each turns our request into theirs and their answer into ours."""
