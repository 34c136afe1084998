"""Scripts that run inside a tool's own interpreter; quantgate never imports them."""
