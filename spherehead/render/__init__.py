"""Camera rays, feature sampling (spheres, tri-planes, tri-grids), ray marching, importance rendering."""
