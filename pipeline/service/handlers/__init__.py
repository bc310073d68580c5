"""Model-service handlers: what a worker process hosts (``python -m pipeline.service.worker --handler MODULE:FACTORY``).

A handler may import models and embedders; the service itself (bridge, worker, breaker) knows none of them.
The spec strings below name each handler without importing it (and torch) in the calling process.
"""

WAV2VEC2 = "pipeline.service.handlers.wav2vec2:Wav2Vec2Handler"
ASR = "pipeline.service.handlers.asr:AsrHandler"
