"""What every layer uses: the name -> thing registry, devices and threads, progress bars, and tidy result rows
(provenance, atomic writes)."""
