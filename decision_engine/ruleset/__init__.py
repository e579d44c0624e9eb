"""Rule files → typed AST (with file:line) → compiled, indexed form; static checks."""
