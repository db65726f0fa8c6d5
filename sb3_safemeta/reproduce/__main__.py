from sb3_safemeta.reproduce.cli import main

if __name__ == "__main__":
    main()
