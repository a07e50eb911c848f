"""Analysis of experiments: result reports over nnU-Net results folders, and the Eq. 4 gradient explorer.

Modules import numpy only at import time; scipy, scikit-learn, matplotlib and SimpleITK are imported
where they are used, so ``nnunet-dicephi --help`` stays fast.
"""
