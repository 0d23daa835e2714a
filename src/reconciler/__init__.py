"""kube-nftlb: a level-triggered Kubernetes Service proxy that programs nftlb."""

__version__ = "0.1.0"
