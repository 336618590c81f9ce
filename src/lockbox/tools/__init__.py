"""The external programs lockbox drives, each found once and passed into the phases."""
