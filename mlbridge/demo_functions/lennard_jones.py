"""Lennard-Jones energy of an atom cluster, in reduced units (ε = σ = 1)."""

import jax.numpy as jnp
import numpy as np

LJ13_MINIMUM = -44.326801  # the icosahedral global minimum of 13 atoms (Cambridge Cluster Database)


def lennard_jones(positions):
    """Lennard-Jones energy of a cluster of atoms at `positions` [N, 3], with epsilon = sigma = 1.

    V = 4 Σ_{i<j} (r_ij⁻¹² − r_ij⁻⁶), r_ij the distance between atoms i and j.
    """
    n = positions.shape[0]
    pairs = jnp.triu(jnp.ones((n, n), dtype=bool), k=1)  # each pair once, no atom with itself
    separations = positions[:, None, :] - positions[None, :, :]
    r2 = jnp.sum(separations**2, axis=-1)
    # r² = 0 on the diagonal: 0⁻³ is inf, and the where below would still send a NaN gradient
    # back through it. Replacing r² *before* the power keeps value and gradient finite.
    r2 = jnp.where(pairs, r2, 1.0)
    inverse_r6 = r2**-3
    return 4.0 * jnp.sum(jnp.where(pairs, inverse_r6**2 - inverse_r6, 0.0))


def icosahedron(radius=1.1):
    """A 13-atom cluster: one atom at the centre, twelve at the vertices of an icosahedron."""
    golden = (1 + np.sqrt(5)) / 2
    vertices = []
    for a in (-1.0, 1.0):
        for b in (-golden, golden):
            vertices += [(0.0, a, b), (a, b, 0.0), (b, 0.0, a)]
    vertices = np.array(vertices) * radius / np.hypot(1.0, golden)
    return np.vstack([np.zeros((1, 3)), vertices])
