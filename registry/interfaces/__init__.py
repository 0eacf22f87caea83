"""The interfaces: the command line (click) and the HTTP service (Starlette), with their shared output, plots, the
seed's contract and the one-line error handling. They call library functions only."""
