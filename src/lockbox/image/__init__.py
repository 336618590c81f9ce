"""OCI images made from a built closure.

:func:`lockbox.image.oci.make_image` is the phase's entry. It starts from
:mod:`~lockbox.image.base` (this host's glibc, or a ``--base`` image), writes one layer per
part of the closure (:mod:`~lockbox.image.layers`, as tars from :mod:`~lockbox.image.tar`),
takes the layers of store entries from :mod:`~lockbox.image.cache` when an earlier image
kept them, and writes the OCI layout or archive around them.
"""
