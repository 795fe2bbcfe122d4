"""Reading the config file: the YAML front-end with line numbers, and its
validation into the account models."""
