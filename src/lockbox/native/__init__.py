"""Native libraries: reading ELF files, resolving what they need, rewriting them."""
