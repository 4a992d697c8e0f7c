"""Camera labels: position, orientation, intrinsics, mirroring, yaw/pitch decoding."""
import numpy as np
import pytest
import torch

from spherehead import camera
from spherehead.render.rays import camera_rays


def test_front_camera_sits_on_z_and_looks_at_origin_with_released_intrinsics():
    c = camera.lookat(0, 0)
    assert c.shape == (1, 25)
    m = c[0, :16].reshape(4, 4).double()
    assert torch.allclose(m[:3, 3], torch.tensor([0, 0, 2.7], dtype=torch.float64), atol=1e-6)
    assert torch.allclose(m[:3, 2], torch.tensor([0, 0, -1], dtype=torch.float64), atol=1e-6)  # forward
    assert torch.allclose(m[:3, 0], torch.tensor([1, 0, 0], dtype=torch.float64), atol=1e-6)   # image right = +x
    assert torch.allclose(m[:3, 1], torch.tensor([0, -1, 0], dtype=torch.float64), atol=1e-6)  # image down = -y
    assert torch.allclose(m[:3, :3] @ m[:3, :3].T, torch.eye(3, dtype=torch.float64), atol=1e-6)
    assert c[0, 16:].tolist() == pytest.approx([4.2647, 0, 0.5, 0, 4.2647, 0.5, 0, 0, 1], abs=1e-6)


def test_yaw_90_puts_camera_at_plus_x_and_180_behind():
    assert camera.lookat(90, 0)[0, [3, 7, 11]].tolist() == pytest.approx([2.7, 0, 0], abs=1e-6)
    assert camera.lookat(180, 0)[0, [3, 7, 11]].tolist() == pytest.approx([0, 0, -2.7], abs=1e-6)
    assert camera.lookat(0, 90)[0, [3, 7, 11]].tolist() == pytest.approx([0, 2.7, 0], abs=1e-6)


@pytest.mark.parametrize('yaw,pitch', [(0, 0), (37, -20), (-150, 45), (180, 10), (0, 89.9)])
def test_label_decodes_to_its_yaw_and_pitch(yaw, pitch):
    y, p, r = camera.label_to_yaw_pitch(camera.lookat(yaw, pitch))
    assert ((y[0] - yaw + 180) % 360 - 180) == pytest.approx(0, abs=1e-3) or abs(pitch) > 89
    assert p[0] == pytest.approx(pitch, abs=1e-3) and r[0] == pytest.approx(2.7, abs=1e-5)


def test_mirroring_twice_is_identity_and_mirrors_the_camera_across_x():
    c = camera.lookat(40, 15)
    assert torch.equal(camera.mirror_label(camera.mirror_label(c)), c)
    m = camera.mirror_label(c)
    assert camera.label_to_yaw_pitch(m)[0][0] == pytest.approx(-40, abs=1e-3)
    r = m[0, :16].reshape(4, 4)[:3, :3].double()
    assert torch.allclose(r @ r.T, torch.eye(3, dtype=torch.float64), atol=1e-6)
    assert torch.det(r).item() == pytest.approx(1.0, abs=1e-5)
    arr = camera.mirror_label(c.numpy())
    assert isinstance(arr, np.ndarray) and np.allclose(arr, m.numpy())


def test_centre_ray_points_at_the_origin():
    origins, dirs = camera_rays(camera.lookat(30, 20), 2)  # 2x2: no centre pixel; average the four
    mean_dir = torch.nn.functional.normalize(dirs[0].mean(0), dim=0)
    to_origin = torch.nn.functional.normalize(-origins[0, 0], dim=0)
    assert torch.allclose(mean_dir, to_origin, atol=1e-5)


def test_fov_formula_matches_eg3d_tools():
    assert camera.fov_to_focal(30.0) == pytest.approx(1 / (1.414 * np.tan(np.radians(15))))
    assert camera.fov_to_focal(18.837) == 4.2647
