"""Built-in requests for benchmarks when no --data file is given (written for this project)."""

PROMPTS = {
    "bash": [
        "find all python files modified in the last day",
        "count the lines of every txt file in the current directory",
        "delete empty directories under /tmp",
        "show the ten largest files in the home directory",
        "search for the word error in all log files recursively",
        "list processes sorted by memory usage",
        "compress the folder data into data.tar.gz",
        "print the disk usage of each subdirectory in human readable form",
    ],
    "python": [
        "reverse the list x",
        "sort dictionary d by its values",
        "read the file data.txt into a string",
        "convert the string s to lower case",
        "get the keys of dictionary d as a list",
        "remove duplicates from list items",
        "join the list of strings words with commas",
        "check if file path exists",
    ],
    "cf": [
        "highlight values greater than 100",
        "format cells that contain the text done",
        "color the top 10 values",
        "highlight duplicate values",
        "values between 5 and 20",
        "cells below the average",
        "values less than 0",
        "text that starts with A",
    ],
}
