"""Fast Spatial Memory: a 4D reconstruction model with elastic test-time training (LaCET)."""

from fsm.cameras import ClipNormalization
from fsm.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from fsm.lacet import ElasticConfig, ElasticState
from fsm.model import FSM, PRESETS, FSMConfig, StreamConfig, Views, preset
from fsm.stream import ChunkRecord, StreamSession

__all__ = [
    "FSM", "FSMConfig", "StreamConfig", "PRESETS", "preset", "Views", "ElasticConfig", "ElasticState",
    "StreamSession", "ChunkRecord", "ClipNormalization", "load_checkpoint", "save_checkpoint", "CheckpointError",
]
