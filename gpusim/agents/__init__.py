"""T-cell agents and tumour-lattice rules (DESIGN.md §3): the T-cell store, its spatial index."""
