"""
Launcher: ``python -m sb3_safemeta.zoo.train`` takes exactly the arguments of ``python -m rl_zoo3.train``.

It registers ``safemeta`` and ``safe_adapter`` with rl-zoo3 first, so it works with or without the
startup hook (rl-zoo3's documented pattern for algorithms that live outside the zoo).
"""

from sb3_safemeta.zoo.registration import register


def main() -> None:
    register()
    from rl_zoo3.train import train

    train()


if __name__ == "__main__":
    main()
