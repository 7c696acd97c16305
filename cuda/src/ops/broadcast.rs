//! Binary element-wise ops with broadcasting, and their VJPs reduced over broadcast axes.
