{% snapshot countries_snapshot %}
    {{ config(unique_key='country_code', strategy='check', check_cols=['country_name', 'region']) }}
    select * from {{ ref('countries') }}
{% endsnapshot %}
