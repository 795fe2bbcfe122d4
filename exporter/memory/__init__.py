"""The process's memory: the garbage collector's policy for a process whose scrapes
hold many objects at once, and handing freed heap pages back after large bodies."""
