"""voxseg: U-Net segmentation of 3D medical scans on whatever hardware you have.

Data flows one way: io -> data -> plan -> nets/losses -> train -> infer -> metrics -> report; cli on top.
"""
__version__ = "0.1.0"
