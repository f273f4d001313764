"""Generated from proto/ by generate_protos.py: do not edit."""
