"""HTTP access to Stratum-0/1 servers through proxy groups, with streaming verification."""
