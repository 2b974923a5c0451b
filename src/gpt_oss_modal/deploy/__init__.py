"""The Modal deployment: the image, the calls to Modal, the preflight checks and `doctor`. The app itself is `gpt_oss_modal.modal_app`."""
