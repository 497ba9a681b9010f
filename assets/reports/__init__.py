"""The data-quality report on reconciliation results (HTML with inline SVG charts)."""
