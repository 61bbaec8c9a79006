{#- Generic test: no two rows share the values of `columns` (dbt_utils' unique_combination_of_columns,
    written here because the project installs no packages). -#}
{% test unique_combination(model, columns) %}
select {{ columns | join(', ') }}, count(*) as occurrences
from {{ model }}
group by {{ columns | join(', ') }}
having count(*) > 1
{% endtest %}
