"""EmotionNAS for NNI: two-stream neural architecture search for speech emotion recognition."""

import warnings

__version__ = "0.1.0"

# NNI 3.0 wraps every torch.nn class when `nni.nas` is imported and warns "PyTorch version might not be
# supported" about torch 2.x's non-Module helpers (nn.Buffer, ...): harmless, and printed into every nnictl
# trial's stderr. Set here because trials (`python -m nni_emotionnas.nni_support.trial`) skip the CLI.
warnings.filterwarnings("ignore", message=".*is found to be not a nn.Module.*", category=RuntimeWarning,
                        module="nni.nas.nn.pytorch.layers")
