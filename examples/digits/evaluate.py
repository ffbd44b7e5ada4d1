"""The digits example on its 1,000 held-out images, scored through a server with `grpc-model score`.

    .venv/bin/python examples/digits/evaluate.py export DIR        # DIR/images/*.png and DIR/labels.csv
    grpc-model score DIR/images --server localhost:45000 --out DIR/results.csv
    .venv/bin/python examples/digits/evaluate.py report DIR        # accuracy, DIR/confusion.png

`export` needs scikit-learn (the examples-train group); `report` reads only the two CSV files.
"""

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw

CELL = 44  # pixels per cell of the confusion matrix image


def export(directory: Path) -> None:
    """Each held-out image as a 32x32 PNG named after its dataset index, and its true label in labels.csv."""
    import train  # scikit-learn, only here

    data = train.split()
    images = directory / "images"
    images.mkdir(parents=True, exist_ok=True)
    with (directory / "labels.csv").open("w", newline="") as labels:
        writer = csv.writer(labels, lineterminator="\n")
        writer.writerow(["id", "label"])
        for index in sorted(data.held_out.tolist()):
            name = f"heldout-{index:04d}.png"
            train.render(data.images[index], 4).save(images / name, "PNG")
            writer.writerow([name, int(data.labels[index])])
    print(f"wrote {len(data.held_out)} images to {images} and their labels to {directory / 'labels.csv'}")


def confusion(directory: Path) -> tuple[NDArray[np.int64], int, int]:
    """(10x10 counts of true row, predicted column; items scored; items that failed)."""
    with (directory / "labels.csv").open(newline="") as file:
        labels = {row["id"]: int(row["label"]) for row in csv.DictReader(file)}
    matrix = np.zeros((10, 10), dtype=np.int64)
    scored = failed = 0
    with (directory / "results.csv").open(newline="") as file:
        for row in csv.DictReader(file):
            scored += 1
            if row["success"] != "true":
                failed += 1
                continue
            top = json.loads(row["results.json"])["data"]["result"]["classPredictions"][0]["class"]
            matrix[labels[row["id"]], int(top)] += 1
    return matrix, scored, failed


def draw(matrix: NDArray[np.int64], path: Path, title: str) -> None:
    """The matrix as a PNG: rows the true digit, columns the predicted one, darker for more items."""
    size = CELL * 11
    image = Image.new("RGB", (size, size + CELL), "white")
    pen = ImageDraw.Draw(image)
    pen.text((CELL // 4, size + CELL // 3), title, fill="black")
    pen.text((2, 2), "true\\pred", fill="black")
    diagonal = np.eye(10, dtype=bool)
    tops = {True: max(int(matrix[diagonal].max()), 1), False: max(int(matrix[~diagonal].max()), 1)}
    for k in range(10):
        pen.text((CELL * (k + 1) + CELL // 2 - 3, CELL // 2 - 5), str(k), fill="black")
        pen.text((CELL // 2 - 3, CELL * (k + 1) + CELL // 2 - 5), str(k), fill="black")
    for row in range(10):
        for column in range(10):
            count = int(matrix[row, column])
            shade = 255 - int(200 * count / tops[row == column])  # mistakes shaded among themselves
            color = (shade, shade, 255) if row == column else (255, shade, shade)
            box = (CELL * (column + 1), CELL * (row + 1), CELL * (column + 2) - 1, CELL * (row + 2) - 1)
            pen.rectangle(box, fill=color if count else "white", outline="#cccccc")
            if count:
                pen.text((box[0] + CELL // 3, box[1] + CELL // 3), str(count), fill="black" if shade > 120 else "white")
    image.save(path, "PNG")


def report(directory: Path) -> None:
    matrix, scored, failed = confusion(directory)
    correct = int(np.trace(matrix))
    accuracy = correct / scored if scored else 0.0
    title = f"{correct} of {scored} held-out digits right: accuracy {accuracy:.1%}"
    draw(matrix, directory / "confusion.png", title)
    print(title + (f" ({failed} failed)" if failed else ""))
    print("rows: true digit; columns: predicted")
    for k in range(10):
        print(f"  {k}: " + " ".join(f"{int(n):3d}" for n in matrix[k]))
    print(f"wrote {directory / 'confusion.png'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=["export", "report"])
    parser.add_argument("directory", type=Path)
    args = parser.parse_args()
    export(args.directory) if args.step == "export" else report(args.directory)
    return 0


if __name__ == "__main__":
    sys.exit(main())
