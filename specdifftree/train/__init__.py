"""Curriculum training of the prior (`sdt train-prior`): encoder + logit-bias head on a frozen LLM
(--variant bias), or encoder + soft-prompt projector through it (--variant sp, OpenTSLM-SP).

    config.py    TrainConfig and its presets (test, smoke, default, full); BackbonePreset
    backbone.py  pretraining the embedded backbones (sdt pretrain-backbone: default, text), layer surgery
    backbone_state.py  a backbone build's checkpoint (weights, AdamW moments, step), for resuming it
    decode.py    the frozen backbone's part: cached teacher-forced answer logits, greedy decoding
    examples.py  a split: checked, tokenised examples, cached logits, label choices (likelihood ranking)
    metrics.py   per-token NLL, next-token accuracy, label accuracy and macro recall, chance, p-values
    curriculum.py  the stages in order (train_prior), the run directory and its manifest
    stage.py     one stage (train_stage): epochs, validation, early stopping, resume state, files
    bias.py      the bias variant: encoder + logit-bias head over cached backbone logits
    soft_prompt.py  the soft-prompt variant: upstream layout, LoRA adapters, its checkpoints
    state.py     atomic resume state and the run manifest (train_prior.json)
    report.py    metrics.csv, PNG curves, self-contained index.html
"""
