module github.com/patronus-sdwan/patronus/tools/clusterbench

go 1.26.0
