"""The volume of a box: the smallest function with a gradient worth serving."""

import jax.numpy as jnp


def box_volume(sides):
    """Volume of a box with the three side lengths `sides`; its gradient is the face areas."""
    return jnp.prod(sides)
