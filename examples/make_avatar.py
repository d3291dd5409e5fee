"""Draw examples/avatar.png: a simple head-and-shoulders face, made here so it is free to ship.

Run: python examples/make_avatar.py   (needs Pillow, which opentalking-flashhead installs)
Framed as the README recommends for real faces (front-facing, head and shoulders, square), so its
mouth sits where the stand-in service draws one: on the centre line, 56 % of the way down.
"""

from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

SIZE = 512
#: The face is drawn on a 512 grid, then scaled by SCALE about the top centre and moved down by TOP.
SCALE, TOP = 0.857, -20


def box(x0: float, y0: float, x1: float, y1: float) -> tuple[float, float, float, float]:
    """A face-grid box in image pixels."""
    return (
        SIZE / 2 + (x0 - SIZE / 2) * SCALE,
        TOP + y0 * SCALE,
        SIZE / 2 + (x1 - SIZE / 2) * SCALE,
        TOP + y1 * SCALE,
    )


def point(x: float, y: float) -> tuple[float, float]:
    return box(x, y, x, y)[:2]


def draw_avatar() -> Image.Image:
    image = Image.new("RGB", (SIZE, SIZE))
    draw = ImageDraw.Draw(image)
    for y in range(SIZE):  # soft studio backdrop
        shade = int(70 + 60 * y / SIZE)
        draw.line([(0, y), (SIZE, y)], fill=(shade // 2, shade, shade + 40))
    draw.rectangle((80, 400, 432, 512), fill=(40, 60, 110))  # shoulders
    draw.ellipse((20, 380, 180, 560), fill=(40, 60, 110))
    draw.ellipse((332, 380, 492, 560), fill=(40, 60, 110))
    draw.rectangle(box(216, 380, 296, 470), fill=(214, 168, 136))  # neck
    draw.ellipse(box(136, 70, 376, 420), fill=(232, 186, 152))  # face
    draw.chord(box(126, 50, 386, 250), 180, 360, fill=(70, 45, 30))  # hair
    draw.ellipse(box(120, 190, 150, 260), fill=(222, 176, 142))  # ears
    draw.ellipse(box(362, 190, 392, 260), fill=(222, 176, 142))
    for x in (196, 290):  # eyes, brows
        draw.ellipse(box(x - 26, 212, x + 26, 240), fill=(250, 250, 250))
        draw.ellipse(box(x - 11, 215, x + 11, 237), fill=(70, 110, 150))
        draw.ellipse(box(x - 5, 221, x + 5, 231), fill=(20, 20, 20))
        draw.arc(box(x - 30, 186, x + 30, 214), 200, 340, fill=(70, 45, 30), width=4)
    draw.polygon([point(256, 240), point(240, 300), point(272, 300)], fill=(214, 160, 128))  # nose
    draw.chord(box(222, 346, 290, 372), 0, 180, fill=(170, 80, 80))  # mouth, closed
    return image.filter(ImageFilter.SMOOTH)


if __name__ == "__main__":
    target = Path(__file__).with_name("avatar.png")
    draw_avatar().save(target, optimize=True)
    print(f"wrote {target}")
