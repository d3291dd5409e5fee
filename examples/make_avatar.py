"""Draw examples/avatar.png: a simple face, made here so it is free to ship.

Run: python examples/make_avatar.py   (needs Pillow, which opentalking-flashhead installs)
The mouth sits where the stand-in service animates one (centre, 70 % down a 512×512 frame).
"""

from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

SIZE = 512


def draw_avatar() -> Image.Image:
    image = Image.new("RGB", (SIZE, SIZE))
    draw = ImageDraw.Draw(image)
    for y in range(SIZE):  # soft studio backdrop
        shade = int(70 + 60 * y / SIZE)
        draw.line([(0, y), (SIZE, y)], fill=(shade // 2, shade, shade + 40))
    draw.rectangle((96, 430, 416, 512), fill=(40, 60, 110))  # shoulders
    draw.ellipse((60, 400, 200, 560), fill=(40, 60, 110))
    draw.ellipse((312, 400, 452, 560), fill=(40, 60, 110))
    draw.rectangle((216, 380, 296, 440), fill=(214, 168, 136))  # neck
    draw.ellipse((136, 70, 376, 420), fill=(232, 186, 152))  # face
    draw.chord((126, 50, 386, 250), 180, 360, fill=(70, 45, 30))  # hair
    draw.ellipse((120, 190, 150, 260), fill=(222, 176, 142))  # ears
    draw.ellipse((362, 190, 392, 260), fill=(222, 176, 142))
    for x in (196, 290):  # eyes, brows
        draw.ellipse((x - 26, 212, x + 26, 240), fill=(250, 250, 250))
        draw.ellipse((x - 11, 215, x + 11, 237), fill=(70, 110, 150))
        draw.ellipse((x - 5, 221, x + 5, 231), fill=(20, 20, 20))
        draw.arc((x - 30, 186, x + 30, 214), 200, 340, fill=(70, 45, 30), width=5)
    draw.polygon([(256, 240), (240, 300), (272, 300)], fill=(214, 160, 128))  # nose
    draw.chord((222, 346, 290, 372), 0, 180, fill=(170, 80, 80))  # mouth, closed
    return image.filter(ImageFilter.SMOOTH)


if __name__ == "__main__":
    target = Path(__file__).with_name("avatar.png")
    draw_avatar().save(target, optimize=True)
    print(f"wrote {target}")
