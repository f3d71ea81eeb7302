"""Allow ``python -m voicechat``."""

from voicechat.cli import main

if __name__ == "__main__":
    main()
