"""S-ADT: amortize tree search with a flow network trained by trajectory balance.

    buffer.py     search buffers (`sdt search --save-buffer`): trajectories, rewards, tree values
    flow.py       FlowNet (F_phi for every next token, log Z_phi(c)), Flow (q on a problem), checkpoints
    losses.py     trajectory balance (+ detailed balance against tree values), one screen
    data.py       trajectories with the prior's features; batches
    train.py      AmortizeConfig and the training loop (`sdt amortize`)
    pipeline.py   collect_buffer / train_flow: the loop as Python calls
"""
