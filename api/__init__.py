"""drtrain HTTP service. Never imports torch: the API process stays light and forks no CUDA."""
