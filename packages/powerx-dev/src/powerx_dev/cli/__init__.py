"""`powerx demo` and `powerx sandbox`: registered in the `powerx.commands` entry-point group."""
