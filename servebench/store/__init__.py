"""Run directories on disk: reading and writing their files, salvage when the disk is full, credentials scrubbed before anything is written."""
