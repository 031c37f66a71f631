"""A sensor-language model: SensorLM's two-tower recipe (a ViT over time x channel patches and a
small text transformer, SigLIP loss) trained on the package's hierarchical captions; a learned
reward of how well a text fits a series, a zero-shot classifier and a retriever (docs/sensorlm.md).

    config.py      SensorLMConfig (the towers' shapes; no torch)
    model.py       SensorLM (the towers), siglip_loss
    inputs.py      windows -> patch tensors, texts -> token ids, the caption tokenizer
    pairs.py       (window, caption) pairs per split: chest accelerometer by participant, ETT / M4 by time
    train.py       SensorLMTrainConfig (presets configs/sensorlm/*.yaml), train_sensorlm (resumable)
    checkpoint.py  the model directory: check_model_dir, load_sensorlm, save_sensorlm
    evaluate.py    embeddings, zero-shot probabilities, recall@k, macro-F1, a linear probe
    apply.py       sdt sensorlm classify / retrieve: a file's windows, checks before the model loads
    measure.py     sdt sensorlm evaluate: the held-out numbers, the similarity figure
    reward.py      SensorLMReward: `--reward sensorlm:DIR`, reward_costs
"""
