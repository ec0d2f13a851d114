"""napari-octseg: retinal OCT layer segmentation, Grad-CAM explanations, fine-tuning and thickness.

Importing the package imports neither torch nor Qt; the submodules do what they need.
"""

__version__ = "0.1.0"
