"""Generated from protos/flywheel/v1 by scripts/gen_protos.sh; never edited by hand."""
